"""What every pipeline component shares."""

# The one project image: components and serving run from it on a cluster (see Dockerfile).
# kfp.local's SubprocessRunner ignores it and runs in the current virtual environment.
PROJECT_IMAGE = "ghcr.io/riskops/riskops:0.1.0"
