"""Training tasks: each turns parsed ``glasscuda.train`` arguments into a finished run."""
