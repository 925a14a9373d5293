{{ config(alias='stg_outcomes') }}

-- The latest reported outcome per customer: 1 = bought product A, 0 = did not.

with outcomes as (

    select
        cast(customer_id as varchar) as customer_id,
        cast(cast(bought_product_a as boolean) as integer) as bought_product_a,
        _load_id as outcome_load_id,
        _loaded_at as reported_at,
        row_number() over (partition by customer_id order by _loaded_at desc, _source_row desc) as recency
    from {{ source('swiss_bank', 'raw_outcomes') }}

)

select customer_id, bought_product_a, outcome_load_id, reported_at
from outcomes
where recency = 1
