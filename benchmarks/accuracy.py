"""Print the accuracy table (max error in ulps) of softmaxkit and its peers.

make accuracy
"""

from __future__ import annotations

from softmaxkit import _bench

if __name__ == "__main__":
    print(_bench.format_accuracy(_bench.accuracy(lambda m: print(m, flush=True))))
