{{ config(alias='stg_outcomes') }}

-- The latest reported outcome per customer: 1 = bought, 0 = did not buy.

with outcomes as (

    select
        cast(customer_id as varchar) as customer_id,
        case Purchase when 'Yes' then 1 when 'No' then 0 end as purchased_caravan_policy,
        _load_id as outcome_load_id,
        _loaded_at as reported_at,
        row_number() over (partition by customer_id order by _loaded_at desc, _source_row desc) as recency
    from {{ source('caravan', 'raw_outcomes') }}

)

select customer_id, purchased_caravan_policy, outcome_load_id, reported_at
from outcomes
where recency = 1
