"""Looking at finished work: a sweep's report (HTML or Markdown) and its upload to W&B."""
