"""The scoring service: published scores and real-time scoring over HTTP (FastAPI + uvicorn).

Plain modules, no Dagster import: `artefacts` (models exported lock-free by the pipeline), `features`
(the use case's dbt SQL on in-memory DuckDB), `state` (snapshots swapped on publication), `records`
(request log and alerts), `config` (hashed API keys, canary), `app` (the FastAPI factory), `server`.
"""
