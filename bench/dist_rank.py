"""One process of `bench/distributed.py`: `posttrain.cli.main(ARGS)`, then its peak RSS to OUT.rankR.json.

usage (under torchrun): dist_rank.py OUT posttrain-args...
"""
import json
import os
import resource
import sys

if __name__ == "__main__":
    out, args = sys.argv[1], sys.argv[2:]
    from posttrain.cli import main

    rc = main(args)
    rank = int(os.environ.get("RANK", "0"))
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, f)
    sys.exit(rc)
