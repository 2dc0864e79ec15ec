"""The FixPr workflow's core: diffs, repository hosts, the fix record, the steps, approvals.

Importing this package does no I/O and imports neither boto3 nor httpx.
"""
