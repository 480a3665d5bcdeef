"""Reports for people and CI systems: findings.json, SARIF, GitLab, JUnit, Markdown, HTML."""
