{{ config(alias='customer_features') }}

-- The feature mart: one row per customer with every model input and the target. Models train on
-- it and score it; the use-case definition (mlops_assets/use_cases/caravan.yaml) picks the features.

with customers as (

    select * from {{ ref('stg_caravan__customers') }}

),

portfolio as (

    select * from {{ ref('int_caravan__policy_portfolio') }}

)

select
    customers.* exclude (load_id, loaded_at, outlier_columns),
    portfolio.total_policies,
    portfolio.policy_types_held,
    portfolio.total_contribution_class,
    customers.load_id

from customers
inner join portfolio using (customer_id)
