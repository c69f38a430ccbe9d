"""The campaign launcher: job kinds, plan (DAG of job specs), executors (slurm, local, debug), records, status.

    from microcal_hpc.launcher.campaign import submit_campaign
    submit_campaign(cfg, executor="local", run_dir="runs/main")

Modules: ``jobkinds`` (the kinds of job, declared once), ``plan`` (JobSpec, build_plan), ``worker``
(run_spec, CheckpointableJob: what runs inside a job), ``executors`` (SLURM through submitit), ``local``
(the local executor, packing job processes into the cores, and the in-process debug executor),
``job_process`` (one local job as a process), ``cores`` (who gets which cores), ``locks`` (one launcher
per run directory, one process per job), ``sbatch`` (plain sbatch scripts from the plan), ``stale``
(results computed with other settings), ``preflight`` (checks against the data before submitting),
``records`` (RUN/jobs/*.json, RUN/manifest.json), ``status`` (records + sacct/squeue + outputs),
``campaign`` (submit_campaign).
"""
