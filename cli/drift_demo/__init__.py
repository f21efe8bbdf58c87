"""`riskops drift-demo`: the closed loop, live, over the real server and the real pipeline.

    serve the champion (KServe, subprocess)  ->  replay normal generated traffic over HTTP
    -> onset of a drift scenario (riskops.data.generator: a new fraud ring, a promotion season, ...)
    -> delayed feedback labels (POST /v1/feedback, or a file drop through riskops.monitoring.feedback)
    -> a monitor pass every N transactions, in-process (riskops.lifecycle.loop.run_loop_once)
    -> drift verdict -> RetrainTrigger starts `riskops pipeline run` as a local subprocess
    -> the promotion gate (riskops.lifecycle.promotion) on labelled rows neither model trained on
       [--canary: then the server's online canary]  ->  new champion hot-swapped and serving,
       or the challenger rejected and the champion kept (the reason printed)
    -> after a promotion the loop settles: the drift reference is re-baselined on the new champion's
       traffic (riskops.monitoring.rebaseline), the learned shift raises no second retraining, and a
       second, different scenario injected later is still caught

One simulated world (`world.build_timeline`): the first ``train_rows`` transactions train the first
champion, the next ``normal_rows`` are replayed as normal traffic, then ``drift_rows`` of the
scenario follow in time (same users, devices, merchants). Labels reach the feedback store
``label_delay`` transactions after the transaction was scored (chargebacks and reviews take time).
Every transaction gets a label in the end (fraud or not), so a row still without one when the
retraining data is cut is simply not labelled yet and is left out (``retrain.unlabelled: drop``):
counting it as legitimate put the newest ring frauds into the gate's window as "legitimate" and
penalised exactly the challenger that had learned the ring.

The retraining data is the champion's training history plus the replayed traffic with its
feedback labels, minus the newest ``holdout_fraction`` (kept for the gate). Entity features are
windowed aggregates (up to 30 days), so the history is needed for them to match what serving
computes. The pipeline validates and tests on its newest rows, which here would be the whole
labelled part of the shift: the trigger passes ``--recent-from`` (riskops.lifecycle.retrain
``train_on_recent``) so that every replayed row trains and validation/test are cut from the
history. Before that, the challenger trained on history alone and the gate rejected it (fraud_ring,
seed 7: PR-AUC 0.816 -> 0.822); with it, 0.797 -> 0.876 and promoted. Small ``--val-fraction`` /
``--test-fraction`` keep most of the history in training (the gate, not the pipeline's test
split, decides promotion).

Figures: detection delay (transactions after the onset at the first drift verdict), onset ->
detection / retraining start / gate / new champion serving (seconds), PR-AUC of the old and the
new model on post-drift labelled traffic (the gate's window), and per served version. The timeline
is printed as it happens and written to ``<home>/reports/drift-demo/timeline-<UTC stamp>.json``.
Exit code: 0 when the loop closed (a gate decision was taken and serving reflects it: the new
champion answers, or the old one still does after a rejection) and, after a promotion, settled
(`settle`: (a) the learned shift quiet against the re-baselined reference, (b) the second shift
caught); 1 otherwise. ``second_scenario: none`` ends the demo at the decision, as before.

Modules, in the order a run meets them: `world` (options, the generated timeline), `command` (the
`riskops drift-demo` entry point, the first champion), `server_process` (the model server),
`monitoring` (the monitor config), `loop` (the replay and its steps), `feedback` (delayed labels),
`decisions` (gate and canary), `settle` (after a promotion), `events` (the printed timeline),
`report` (figures, timeline JSON).
"""

from cli.drift_demo.command import run_drift_demo, train_champion
from cli.drift_demo.loop import run_loop
from cli.drift_demo.report import LoopResult, print_figures
from cli.drift_demo.world import DEMO_DIR, LoopOptions, Timeline, build_timeline

__all__ = [
    "DEMO_DIR",
    "LoopOptions",
    "LoopResult",
    "Timeline",
    "build_timeline",
    "print_figures",
    "run_drift_demo",
    "run_loop",
    "train_champion",
]
