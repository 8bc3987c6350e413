"""The xarray layer: the column engine, the input contract, the public xarray functions, transient runs, scenarios and the ``.proda`` accessor."""
