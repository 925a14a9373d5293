{#- The latest reported campaign outcome per customer (1 = bought, 0 = did not) from an append-only
    outcomes source; `outcome_expression` turns the raw value into 1/0. -#}
{% macro latest_outcomes(outcomes_source, target, outcome_expression) %}
with outcomes as (

    select
        cast(customer_id as varchar) as customer_id,
        {{ outcome_expression }} as {{ target }},
        _load_id as outcome_load_id,
        _loaded_at as reported_at,
        row_number() over (partition by customer_id order by _loaded_at desc, _source_row desc) as recency
    from {{ outcomes_source }}

)

select customer_id, {{ target }}, outcome_load_id, reported_at
from outcomes
where recency = 1
{% endmacro %}
