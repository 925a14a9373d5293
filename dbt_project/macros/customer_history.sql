{#- Every accepted customer record of every load, incremental: a load is added once. The staging
    model holds only the latest load; training needs every customer whose outcome is known. Used by
    each use case's int_<use case>__customer_history model. -#}
{% macro customer_history(staging_model) %}
select *
from {{ staging_model }}
{% if is_incremental() %}
where load_id not in (select distinct load_id from {{ this }})
{% endif %}
{% endmacro %}


{#- The latest record of every customer ever accepted, incremental (unique_key customer_id,
    delete+insert): a build takes the history's records newer than the newest it holds, so it reads
    the loads since its last build, not the whole history (DuckDB skips older row groups by their
    min/max). The same rows as a window over the whole history, because load times only grow
    (ingestion stamps a load after the one before); a build that stopped after the history took a
    load catches up on the next. Measured at 1M customers a load (benchmarks/history_growth.py has the
    job's figures): a window over the history took 0.28 s for 1 load kept, 0.49 s for 2, 1.14 s for 5,
    2.87 s for 10, 7.3 s for 20; this build 0.66-0.81 s with 1 to 10 loads kept. -#}
{% macro latest_records(history_model) %}
{#- The incremental rule is this macro's, so it is set here, not in each use case's model. -#}
{{ config(materialized='incremental', unique_key='customer_id', incremental_strategy='delete+insert') }}
select *
from {{ history_model }}
{% if is_incremental() %}
where loaded_at > coalesce((select max(loaded_at) from {{ this }}), '-infinity'::timestamp)
{% endif %}
qualify row_number() over (partition by customer_id order by loaded_at desc, load_id desc) = 1
{% endmacro %}
