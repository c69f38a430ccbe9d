"""The campaign launcher: job kinds, plan (DAG of job specs), executors (slurm, local, debug), records, status.

    from microcal_hpc.launcher.campaign import submit_campaign
    submit_campaign(cfg, executor="local", run_dir="runs/main")

Modules: ``jobkinds`` (the kinds of job, declared once), ``plan`` (JobSpec, build_plan), ``worker``
(run_spec, CheckpointableJob: what runs inside a job), ``executors`` (submitit SLURM/local, in-process
debug), ``sbatch`` (plain sbatch scripts from the plan), ``stale`` (results computed with other
settings), ``preflight`` (checks against the data before submitting), ``records`` (RUN/jobs/*.json,
RUN/manifest.json), ``status`` (records + sacct/squeue + outputs), ``campaign`` (submit_campaign).
"""
