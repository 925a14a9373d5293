{{
    config(
        alias='int_latest_records',
        materialized='incremental',
        unique_key='customer_id',
        incremental_strategy='delete+insert'
    )
}}

-- Each customer's latest record; what the feature mart is built from.
{{ latest_records(ref('int_caravan__customer_history')) }}
