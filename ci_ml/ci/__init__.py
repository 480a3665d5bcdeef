"""Generation of GitHub Actions and GitLab CI pipelines from the ci-ml config."""
