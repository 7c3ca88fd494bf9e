"""Teachers, the student and where their weights come from."""
