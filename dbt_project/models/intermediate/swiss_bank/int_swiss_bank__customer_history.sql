{{
    config(
        alias='int_customer_history',
        materialized='incremental',
        unique_key=['customer_id', 'load_id'],
        incremental_strategy='delete+insert'
    )
}}

-- Built in the `marts` step, so a load reaches the history only after its staging checks passed.
{{ customer_history(ref('stg_swiss_bank__customers')) }}
