"""Entry points of orthrus-batch: the `orthrus-batch` CLI (jobs/cli.py), job runners, example jobs.

Imports run one way: jobs -> pipeline -> workers.
"""
