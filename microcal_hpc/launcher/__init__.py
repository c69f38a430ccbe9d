"""The campaign launcher: plan (DAG of job specs), executors (slurm, local, debug), records, status.

    from microcal_hpc.launcher.campaign import submit_campaign
    submit_campaign(cfg, executor="local", run_dir="runs/main")

Modules: ``plan`` (JobSpec, build_plan), ``worker`` (run_spec, CheckpointableJob: what runs inside a
job), ``executors`` (submitit SLURM/local, in-process debug), ``records`` (RUN/jobs/*.json,
RUN/manifest.json), ``status`` (records + sacct/squeue), ``campaign`` (submit_campaign).
"""
