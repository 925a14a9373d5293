{#-
Structural rules of a staging model from its use case's data dictionary (seeds/<use case>/
<use case>_data_dictionary.csv): one query per rule family, each returning one row per failing
(column, rule) with the failing count and sample customer ids, so that a failure names what to fix.
Attached per staging model in its YAML (see models/staging/<use case>/); with `store_failures` the
failing rows are kept in the warehouse and shown in the Dagster check (mlops_assets/defs/dbt_quality.py).
The identifier and the target are owned by `unique`/`not_null`/`accepted_values` on the model.
-#}


{#- Every dictionary column is in the model (staging may add derived ones). -#}
{% test dictionary_columns(model, dictionary) %}
with model_columns as ({{ dictionary_rules_model_columns(model) }})
select
    d.feature_name as column_name,
    'schema' as rule,
    'a column of ' || '{{ model.identifier }}' as expected,
    1::bigint as unexpected_count,
    null::bigint as element_count,
    '' as sample_values,
    '' as sample_ids
from {{ dictionary }} as d
where d.value_type <> 'identifier'
  and d.feature_name not in (select column_name from model_columns)
{% endtest %}


{#- Features the dictionary declares integer or float hold numbers of that type. -#}
{% test dictionary_types(model, dictionary) %}
with model_columns as ({{ dictionary_rules_model_columns(model) }}),
integer_types as (
    select unnest(['TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT',
                   'UTINYINT', 'USMALLINT', 'UINTEGER', 'UBIGINT']) as data_type
)
select
    d.feature_name as column_name,
    'types' as rule,
    d.data_type as expected,
    1::bigint as unexpected_count,
    null::bigint as element_count,
    c.data_type as sample_values,
    '' as sample_ids
from {{ dictionary }} as d
join model_columns as c on c.column_name = d.feature_name
where d.value_type not in ('identifier', 'target')
  and d.data_type in ('integer', 'float')
  and not (
      c.data_type in (select data_type from integer_types)
      or (d.data_type = 'float' and (c.data_type in ('FLOAT', 'DOUBLE') or c.data_type like 'DECIMAL%'))
  )
{% endtest %}


{#- At most `max_null_share` missing values per feature column (the use case's quality.max_null_share). -#}
{% test dictionary_completeness(model, dictionary, max_null_share=0.0, id_column='customer_id') %}
{%- set checks = dictionary_rules_checks(
    "select to_json({'feature_name': d.feature_name})::varchar from " ~ dictionary ~ " as d "
    ~ "join (" ~ dictionary_rules_model_columns(model) ~ ") as c on c.column_name = d.feature_name "
    ~ "where d.value_type not in ('identifier', 'target') order by c.ordinal_position") -%}
{%- for check in checks %}
    {%- do check.update({
        'rule': 'completeness',
        'expected': 'at most ' ~ max_null_share ~ ' missing',
        'invalid': check.column ~ ' is null',
        'elements': 'count(*)',
        'limit': max_null_share ~ ' * elements',
    }) %}
{%- endfor %}
{{ dictionary_rules_failures(model, checks, id_column, with_values=false) if checks else dictionary_rules_no_failures() }}
{% endtest %}


{#- Values in the dictionary's code list (with `code_labels`), else its range, else its allowed values. -#}
{% test dictionary_valid_values(model, dictionary, code_labels=none, id_column='customer_id') %}
{%- set rules_sql %}
with codes as (
    {% if code_labels %}
    select code_list, list(cast(code as varchar)) as codes from {{ code_labels }} group by code_list
    {% else %}
    select null::varchar as code_list, null::varchar[] as codes where false
    {% endif %}
),
rules as (
    select
        d.feature_name,
        case
            when d.value_type = 'categorical' and c.codes is not null then 'code_list'
            when d.min_value is not null or d.max_value is not null then 'range'
            when d.allowed_values is not null and d.data_type = 'string' then 'allowed_values'
        end as rule,
        c.codes,
        cast(d.min_value as double) as min_value,
        cast(d.max_value as double) as max_value,
        string_split(cast(d.allowed_values as varchar), '|') as allowed
    from {{ dictionary }} as d
    left join codes as c on c.code_list = d.code_list
    where d.value_type not in ('identifier', 'target')
)
select to_json({
    'feature_name': rules.feature_name,
    'data_type': model_columns.data_type,
    'rule': rules.rule,
    'expected': case rules.rule
        when 'code_list' then 'code list ' || array_to_string(rules.codes, '|')
        when 'range' then coalesce(cast(rules.min_value as varchar), '') || '..' || coalesce(cast(rules.max_value as varchar), '')
        else array_to_string(rules.allowed, '|')
    end,
    -- The rule as SQL literals: the valid values as a text list, the bounds as doubles.
    'values_sql': '[' || array_to_string(list_transform(
        case rules.rule when 'code_list' then rules.codes else rules.allowed end,
        lambda v: '''' || replace(v, '''', '''''') || ''''), ', ') || ']::varchar[]',
    'low_sql': '''' || cast(coalesce(rules.min_value, '-inf'::double) as varchar) || '''::double',
    'high_sql': '''' || cast(coalesce(rules.max_value, 'inf'::double) as varchar) || '''::double'
})::varchar
from rules
join ({{ dictionary_rules_model_columns(model) }}) as model_columns on model_columns.column_name = rules.feature_name
where rules.rule is not null
order by model_columns.ordinal_position
{%- endset %}
{#- Integers and doubles are compared as numbers: the same result as through their text (exact for
    both types), without formatting and parsing every value. -#}
{%- set exact_numbers = ['TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'UTINYINT', 'USMALLINT', 'UINTEGER',
                         'UBIGINT', 'DOUBLE'] -%}
{%- set checks = dictionary_rules_checks(rules_sql) -%}
{%- for check in checks %}
    {%- if check.rule == 'range' %}
        {%- set number = check.column if check.data_type in exact_numbers else check.text %}
        {%- set valid = 'coalesce(try_cast(' ~ number ~ ' as double) between ' ~ check.low_sql ~ ' and ' ~ check.high_sql ~ ', false)' %}
    {%- else %}
        {%- set valid = 'list_contains(' ~ check.values_sql ~ ', ' ~ check.text ~ ')' %}
    {%- endif %}
    {%- do check.update({
        'invalid': check.column ~ ' is not null and not ' ~ valid,
        'elements': 'count(' ~ check.column ~ ')',
        'limit': '0',
    }) %}
{%- endfor %}
{{ dictionary_rules_failures(model, checks, id_column) if checks else dictionary_rules_no_failures() }}
{% endtest %}
