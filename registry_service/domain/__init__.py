"""Domain entities and rules: plain Python, no Flask, SQLAlchemy or MLflow."""
