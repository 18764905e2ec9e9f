using System;
using System.CommandLine;
using System.IO;
using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Emit;
using ModelCompiler.Compiler.Import;

// modelc: the compiler core without a build. Exit codes: 0 success, 1 the input has errors, 2 bad usage or unreadable file.
var root = new RootCommand("ModelCompiler's compiler core on the command line.");

var description = new Argument<FileInfo>("description") { Description = "A *.model.json file." };
var className = new Option<string>("--class") { Description = "Engine class name.", DefaultValueFactory = _ => "Engine" };
var ns = new Option<string?>("--namespace") { Description = "Engine namespace (default: none)." };
var compile = new Command("compile", "Print the C# engine source the generator would produce.") { description, className, ns };
compile.SetAction(r => Run(r.GetValue(description)!, text =>
    ModelCompilerDriver.Compile(text, r.GetValue(description)!.FullName, new EngineClassInfo(r.GetValue(ns), r.GetValue(className)!, r.GetValue(description)!.Name))));
root.Subcommands.Add(compile);

var dumpDescription = new Argument<FileInfo>("description") { Description = "A *.model.json file." };
var dumpIr = new Command("dump-ir", "Print the block graph, the fused kernel plan, the arena layout and the weight table.") { dumpDescription };
dumpIr.SetAction(r => Run(r.GetValue(dumpDescription)!, text => ModelCompilerDriver.DumpPlan(text, r.GetValue(dumpDescription)!.FullName)));
root.Subcommands.Add(dumpIr);

var config = new Argument<FileInfo>("config") { Description = "A Hugging Face config.json (Llama, TinyLlama, Mistral)." };
var name = new Option<string>("--name") { Description = "Model name for the description.", DefaultValueFactory = _ => "Model" };
var weights = new Option<string>("--weights") { Description = "Default weights path in the description.", DefaultValueFactory = _ => "model.safetensors" };
var tokenizer = new Option<string>("--tokenizer") { Description = "Default tokenizer path (llama2.c format).", DefaultValueFactory = _ => "tokenizer.bin" };
var importHf = new Command("import-hf", "Print a model description for a Hugging Face config.json.") { config, name, weights, tokenizer };
importHf.SetAction(r =>
{
    var file = r.GetValue(config)!;
    if (!file.Exists) return Fail($"file not found: {file.FullName}");
    var result = HuggingFaceImporter.Import(File.ReadAllText(file.FullName), r.GetValue(name)!, r.GetValue(weights)!, r.GetValue(tokenizer)!);
    foreach (var error in result.Errors) Console.Error.WriteLine($"{file.FullName}: error: {error}");
    if (result.DescriptionText is null) return 1;
    Console.Out.Write(result.DescriptionText);
    return 0;
});
root.Subcommands.Add(importHf);

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (var error in parsed.Errors) Console.Error.WriteLine("error: " + error.Message);
    return 2;
}
return parsed.Invoke();

static int Run(FileInfo file, Func<string, CompilationResult> action)
{
    if (!file.Exists) return Fail($"file not found: {file.FullName}");
    var result = action(File.ReadAllText(file.FullName));
    foreach (var d in result.Diagnostics) Console.Error.WriteLine(d.ToString());
    if (result.Source is null) return 1;
    Console.Out.Write(result.Source);
    return 0;
}

static int Fail(string message)
{
    Console.Error.WriteLine("error: " + message);
    return 2;
}
