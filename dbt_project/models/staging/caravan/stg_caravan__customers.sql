{{ config(alias='stg_customers') }}

-- The dictionary tests on this model (tests/generic/dictionary_rules.sql) read these seeds; as parents
-- they are built with it, also when only this model and its upstream are selected.
-- depends_on: {{ ref('caravan_data_dictionary') }} {{ ref('caravan_code_labels') }}

-- One row per usable customer, typed, with the readable names of the data dictionary
-- (seeds/caravan/caravan_data_dictionary.csv). Rows quarantined at ingestion are left out (they are
-- listed with their reasons in caravan.quarantined_customers); the target is null for customers
-- whose outcome is not known yet.

with source as (

    select * from {{ source('caravan', 'raw_customers') }}
    where _quarantine_reason is null

),

renamed as (

    select
        cast(customer_id as varchar) as customer_id,
        cast(MOSTYPE as integer) as customer_subtype,
        cast(MAANTHUI as integer) as number_of_houses,
        cast(MGEMOMV as integer) as avg_household_size,
        cast(MGEMLEEF as integer) as avg_age_class,
        cast(MOSHOOFD as integer) as customer_main_type,
        cast(MGODRK as integer) as pct_roman_catholic,
        cast(MGODPR as integer) as pct_protestant,
        cast(MGODOV as integer) as pct_other_religion,
        cast(MGODGE as integer) as pct_no_religion,
        cast(MRELGE as integer) as pct_married,
        cast(MRELSA as integer) as pct_living_together,
        cast(MRELOV as integer) as pct_other_relation,
        cast(MFALLEEN as integer) as pct_singles,
        cast(MFGEKIND as integer) as pct_households_without_children,
        cast(MFWEKIND as integer) as pct_households_with_children,
        cast(MOPLHOOG as integer) as pct_high_education,
        cast(MOPLMIDD as integer) as pct_medium_education,
        cast(MOPLLAAG as integer) as pct_low_education,
        cast(MBERHOOG as integer) as pct_high_status,
        cast(MBERZELF as integer) as pct_entrepreneurs,
        cast(MBERBOER as integer) as pct_farmers,
        cast(MBERMIDD as integer) as pct_middle_management,
        cast(MBERARBG as integer) as pct_skilled_labourers,
        cast(MBERARBO as integer) as pct_unskilled_labourers,
        cast(MSKA as integer) as pct_social_class_a,
        cast(MSKB1 as integer) as pct_social_class_b1,
        cast(MSKB2 as integer) as pct_social_class_b2,
        cast(MSKC as integer) as pct_social_class_c,
        cast(MSKD as integer) as pct_social_class_d,
        cast(MHHUUR as integer) as pct_rented_house,
        cast(MHKOOP as integer) as pct_home_owners,
        cast(MAUT1 as integer) as pct_one_car,
        cast(MAUT2 as integer) as pct_two_cars,
        cast(MAUT0 as integer) as pct_no_car,
        cast(MZFONDS as integer) as pct_national_health_service,
        cast(MZPART as integer) as pct_private_health_insurance,
        cast(MINKM30 as integer) as pct_income_below_30k,
        cast(MINK3045 as integer) as pct_income_30k_45k,
        cast(MINK4575 as integer) as pct_income_45k_75k,
        cast(MINK7512 as integer) as pct_income_75k_122k,
        cast(MINK123M as integer) as pct_income_above_123k,
        cast(MINKGEM as integer) as avg_income_class,
        cast(MKOOPKLA as integer) as purchasing_power_class,
        cast(PWAPART as integer) as contribution_private_third_party,
        cast(PWABEDR as integer) as contribution_third_party_firms,
        cast(PWALAND as integer) as contribution_third_party_agriculture,
        cast(PPERSAUT as integer) as contribution_car,
        cast(PBESAUT as integer) as contribution_delivery_van,
        cast(PMOTSCO as integer) as contribution_motorcycle_scooter,
        cast(PVRAAUT as integer) as contribution_lorry,
        cast(PAANHANG as integer) as contribution_trailer,
        cast(PTRACTOR as integer) as contribution_tractor,
        cast(PWERKT as integer) as contribution_agricultural_machine,
        cast(PBROM as integer) as contribution_moped,
        cast(PLEVEN as integer) as contribution_life,
        cast(PPERSONG as integer) as contribution_private_accident,
        cast(PGEZONG as integer) as contribution_family_accident,
        cast(PWAOREG as integer) as contribution_disability,
        cast(PBRAND as integer) as contribution_fire,
        cast(PZEILPL as integer) as contribution_surfboard,
        cast(PPLEZIER as integer) as contribution_boat,
        cast(PFIETS as integer) as contribution_bicycle,
        cast(PINBOED as integer) as contribution_property,
        cast(PBYSTAND as integer) as contribution_social_security,
        cast(AWAPART as integer) as num_private_third_party_policies,
        cast(AWABEDR as integer) as num_third_party_firms_policies,
        cast(AWALAND as integer) as num_third_party_agriculture_policies,
        cast(APERSAUT as integer) as num_car_policies,
        cast(ABESAUT as integer) as num_delivery_van_policies,
        cast(AMOTSCO as integer) as num_motorcycle_scooter_policies,
        cast(AVRAAUT as integer) as num_lorry_policies,
        cast(AAANHANG as integer) as num_trailer_policies,
        cast(ATRACTOR as integer) as num_tractor_policies,
        cast(AWERKT as integer) as num_agricultural_machine_policies,
        cast(ABROM as integer) as num_moped_policies,
        cast(ALEVEN as integer) as num_life_policies,
        cast(APERSONG as integer) as num_private_accident_policies,
        cast(AGEZONG as integer) as num_family_accident_policies,
        cast(AWAOREG as integer) as num_disability_policies,
        cast(ABRAND as integer) as num_fire_policies,
        cast(AZEILPL as integer) as num_surfboard_policies,
        cast(APLEZIER as integer) as num_boat_policies,
        cast(AFIETS as integer) as num_bicycle_policies,
        cast(AINBOED as integer) as num_property_policies,
        cast(ABYSTAND as integer) as num_social_security_policies,
        case
            when Purchase = 'Yes' then 1
            when Purchase = 'No' then 0
            when Purchase is null or trim(Purchase) = '' then null
            else error('raw_customers.Purchase: unexpected value ''' || Purchase || ''' for customer ' || customer_id || ' (expected Yes or No)')
        end as purchased_caravan_policy,
        _outlier_columns as outlier_columns,
        _load_id as load_id,
        _loaded_at as loaded_at

    from source

)

select * from renamed
