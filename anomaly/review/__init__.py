"""What reviewers said about a report's verdicts, filed back into a part's data."""
