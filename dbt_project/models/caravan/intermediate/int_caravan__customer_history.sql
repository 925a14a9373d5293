{{
    config(
        alias='int_customer_history',
        materialized='incremental',
        unique_key=['customer_id', 'load_id'],
        incremental_strategy='delete+insert'
    )
}}

-- Every accepted customer record of every load, kept across loads: the latest export only holds the
-- current batch, training needs every customer whose outcome is known. A load reaches this table only
-- after its staging checks passed (it is built in the `marts` step).

select *
from {{ ref('stg_caravan__customers') }}

{% if is_incremental() %}
where load_id not in (select distinct load_id from {{ this }})
{% endif %}
