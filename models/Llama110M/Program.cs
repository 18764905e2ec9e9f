return ModelCompiler.Runtime.Hosting.ModelHost.Run<Llama110M.Llama110MEngine>(args);
