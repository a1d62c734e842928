"""The evaluation run: prompts, ICL context shards, scoring runs, reports, tables, figures."""
