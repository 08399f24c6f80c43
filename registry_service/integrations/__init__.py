"""What the registry tells other tools, and what it hears from them: webhooks, the
reconciler of changes made in MLflow behind its back, MLflow's own webhooks."""
