return ModelCompiler.Runtime.Hosting.ModelHost.Run<Llama15M.Llama15MEngine>(args);
