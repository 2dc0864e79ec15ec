"""After the call, locally: a seeded finished call's report and the FixPr workflow on moto.

    .venv/bin/python scripts/demo_post_call.py               # to the approval, then approve
    .venv/bin/python scripts/demo_post_call.py --no-approve  # stop at the approval step

Everything runs in-process on moto with dummy credentials (nothing leaves the machine): the call
table as template.yaml defines it, a seeded call (mirror_dev.reports_demo.seed_demo_call),
then mirror_dev.reports_demo.show_post_call, which `make demo` also calls for its own call.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "shared"), str(REPO / "dev")]

from mirror_dev.local import call_table_properties, create_call_table  # noqa: E402
from mirror_dev.reports_demo import seed_demo_call, show_post_call  # noqa: E402

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-approve", action="store_true", help="stop at the approval step")
    parser.add_argument("--repo-dir", type=Path, help="where to create the local git repository")
    args = parser.parse_args(argv)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(ENV)

    import boto3
    from moto import mock_aws

    from mirror.state import DynamoDBStateStore

    with mock_aws():
        client = boto3.session.Session().client("dynamodb", region_name="us-east-1")
        create_call_table(
            client, "mirror-demo-calls", call_table_properties(REPO / "template.yaml")
        )
        store = DynamoDBStateStore("mirror-demo-calls", client=client)
        call_id = seed_demo_call(store)
        result = show_post_call(
            store, call_id, tenant_id="pizzeria", approve=not args.no_approve,
            workdir=args.repo_dir,
        )  # fmt: skip
    return (
        0 if result.report is not None and result.status in ("awaiting_approval", "opened") else 1
    )


if __name__ == "__main__":
    sys.exit(main())
