-- One server, two databases: MLflow's backend store and registry-service's tables.
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
CREATE USER registry WITH PASSWORD 'registry';
CREATE DATABASE registry OWNER registry;
