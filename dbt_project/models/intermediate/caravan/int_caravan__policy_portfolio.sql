{{ config(alias='int_policy_portfolio') }}

-- Summaries of each customer's latest insurance portfolio: how much insurance, and how broad.

with customers as (

    select * from {{ ref('int_caravan__latest_records') }}

)

select
    customer_id,
    load_id,
    (
        num_private_third_party_policies +
        num_third_party_firms_policies +
        num_third_party_agriculture_policies +
        num_car_policies +
        num_delivery_van_policies +
        num_motorcycle_scooter_policies +
        num_lorry_policies +
        num_trailer_policies +
        num_tractor_policies +
        num_agricultural_machine_policies +
        num_moped_policies +
        num_life_policies +
        num_private_accident_policies +
        num_family_accident_policies +
        num_disability_policies +
        num_fire_policies +
        num_surfboard_policies +
        num_boat_policies +
        num_bicycle_policies +
        num_property_policies +
        num_social_security_policies
    ) as total_policies,
    (
        (num_private_third_party_policies > 0)::integer +
        (num_third_party_firms_policies > 0)::integer +
        (num_third_party_agriculture_policies > 0)::integer +
        (num_car_policies > 0)::integer +
        (num_delivery_van_policies > 0)::integer +
        (num_motorcycle_scooter_policies > 0)::integer +
        (num_lorry_policies > 0)::integer +
        (num_trailer_policies > 0)::integer +
        (num_tractor_policies > 0)::integer +
        (num_agricultural_machine_policies > 0)::integer +
        (num_moped_policies > 0)::integer +
        (num_life_policies > 0)::integer +
        (num_private_accident_policies > 0)::integer +
        (num_family_accident_policies > 0)::integer +
        (num_disability_policies > 0)::integer +
        (num_fire_policies > 0)::integer +
        (num_surfboard_policies > 0)::integer +
        (num_boat_policies > 0)::integer +
        (num_bicycle_policies > 0)::integer +
        (num_property_policies > 0)::integer +
        (num_social_security_policies > 0)::integer
    ) as policy_types_held,
    (
        contribution_private_third_party +
        contribution_third_party_firms +
        contribution_third_party_agriculture +
        contribution_car +
        contribution_delivery_van +
        contribution_motorcycle_scooter +
        contribution_lorry +
        contribution_trailer +
        contribution_tractor +
        contribution_agricultural_machine +
        contribution_moped +
        contribution_life +
        contribution_private_accident +
        contribution_family_accident +
        contribution_disability +
        contribution_fire +
        contribution_surfboard +
        contribution_boat +
        contribution_bicycle +
        contribution_property +
        contribution_social_security
    ) as total_contribution_class

from customers
