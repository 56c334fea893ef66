"""The provisioning worker: the Plausible client, the status table and the pipeline."""
