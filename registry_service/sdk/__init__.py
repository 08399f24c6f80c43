"""What runs outside the service, in training jobs, CI and terminals: the REST client,
the CLI's client commands, and the tracker for training code.

The client and its commands speak only HTTP. The tracker runs in the training process
and reuses the gateway and experiment service, so "best run" means the same there as
over REST.
"""
