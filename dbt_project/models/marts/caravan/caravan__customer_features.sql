{{ config(alias='customer_features') }}

-- The feature mart: one row per customer ever accepted, from their latest record, with every model
-- input and the target. The target is the latest reported campaign outcome if there is one, else the
-- value in the export (null when not known yet). Training uses the labelled rows; scoring scores the
-- customers of the latest load. The use-case definition (mlops_assets/use_cases/caravan.yaml) picks
-- the features.

with latest_records as (

    select * from {{ ref('int_caravan__latest_records') }}

),

portfolio as (

    select * from {{ ref('int_caravan__policy_portfolio') }}

),

outcomes as (

    select * from {{ ref('stg_caravan__outcomes') }}

)

select
    latest_records.* exclude (purchased_caravan_policy, load_id, loaded_at, outlier_columns),
    portfolio.total_policies,
    portfolio.policy_types_held,
    portfolio.total_contribution_class,
    coalesce(outcomes.purchased_caravan_policy, latest_records.purchased_caravan_policy)
        as purchased_caravan_policy,
    latest_records.load_id,
    latest_records.loaded_at

from latest_records
inner join portfolio using (customer_id, load_id)
left join outcomes using (customer_id)
