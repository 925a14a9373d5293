{{
    config(
        alias='int_customer_history',
        materialized='incremental',
        unique_key=['customer_id', 'load_id'],
        incremental_strategy='delete+insert'
    )
}}

-- Every accepted customer record of every load (built only after the staging checks passed).

select *
from {{ ref('stg_swiss_bank__customers') }}

{% if is_incremental() %}
where load_id not in (select distinct load_id from {{ this }})
{% endif %}
