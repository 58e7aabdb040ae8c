"""Model families, each written once on the backend op set: config, weights, model, decode."""
