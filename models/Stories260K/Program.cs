return ModelCompiler.Runtime.Hosting.ModelHost.Run<Stories260K.Stories260KEngine>(args);
