"""Benchmarks: the baseline vs +SFP leaderboard (:mod:`~sfp_agents.bench.leaderboard`, ``sfp
leaderboard``; suites in ``sfp_agents/bench/suites/``, paired statistics in
:mod:`~sfp_agents.bench.stats`) and the throughput ratios (:mod:`~sfp_agents.bench.throughput`,
``sfp bench``). Committed results and the lab notebook live in the repository's
``benchmarks/`` folder, which is not installed."""
