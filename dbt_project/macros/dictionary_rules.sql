{#- Helpers of the dictionary tests (tests/generic/dictionary_rules.sql). -#}

{#- The columns of a relation and their DuckDB types. -#}
{% macro dictionary_rules_model_columns(model) -%}
    select column_name, data_type, ordinal_position from information_schema.columns
    where table_schema = '{{ model.schema }}' and table_name = '{{ model.identifier }}'
{%- endmacro %}


{#- A column name as a DuckDB identifier (dictionary names may hold spaces or quotes). -#}
{% macro dictionary_rules_identifier(name) -%}
    "{{ name | string | replace('"', '""') }}"
{%- endmacro %}


{#-
The per-column checks of a dictionary test, read from the dictionary and the model's columns when
the test runs, so that its query tests each column in place. `rules_sql` selects one JSON object
per check (JSON keeps every value text as the dictionary spells it); each is returned as a dict with
`column` (the quoted name) and `text` (the value as text, as the rules compare it) added.
-#}
{% macro dictionary_rules_checks(rules_sql) %}
    {% if not execute %}{{ return([]) }}{% endif %}
    {% set checks = [] %}
    {% for row in run_query(rules_sql).rows %}
        {% set check = fromjson(row[0]) %}
        {% set column = dictionary_rules_identifier(check.feature_name) %}
        {% do check.update({'column': column, 'text': 'cast(' ~ column ~ ' as varchar)'}) %}
        {% do checks.append(check) %}
    {% endfor %}
    {{ return(checks) }}
{% endmacro %}


{#- A query of a dictionary test that has nothing to check (no such columns): no failing rows. -#}
{% macro dictionary_rules_no_failures() -%}
    select null::varchar as column_name, null::varchar as rule, null::varchar as expected,
           null::bigint as unexpected_count, null::bigint as element_count,
           null::varchar as sample_values, null::varchar as sample_ids
    where false
{%- endmacro %}


{#-
The failing (column, rule) rows of a dictionary test. Each check carries `rule`, `expected`,
`invalid` (a condition on one row), `elements` (the SQL count its share is of) and `limit` (the most
invalid rows it may have, SQL over `elements`). One scan counts every check; a second gathers the
samples (up to 5 distinct values, the 5 smallest ids) from the invalid rows of failing checks only.
Rows and samples are lists of structs unnested once, not a select per check: DuckDB plans a query
of 85 unioned selects (caravan) in about 0.4 s, this one in 0.1 s. At 1M customers
(benchmarks/scale.py, staging step) the two scans took 0.4 s where unpivoting every cell to text,
one row per cell, took 2.6 s.
-#}
{% macro dictionary_rules_failures(model, checks, id_column, with_values=true) -%}
with counts as materialized (
    select
        {%- for check in checks %}
        count(*) filter (where {{ check.invalid }}) as invalid_{{ loop.index }},
        {{ check.elements }} as elements_{{ loop.index }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ model }}
),
failing as (
    select counts.*,
        {%- for check in checks %}
        invalid_{{ loop.index }} > {{ check.limit | replace('elements', 'elements_' ~ loop.index) }} as fails_{{ loop.index }}{{ ',' if not loop.last }}
        {%- endfor %}
    from counts
),
invalid_cells as (
    select unnest(list_filter([
        {%- for check in checks %}
        {'check': {{ loop.index }}, 'value': {{ check.text if with_values else 'null::varchar' }}, 'id': {{ id_column }},
         'invalid': fails_{{ loop.index }} and {{ check.invalid }}}{{ ',' if not loop.last }}
        {%- endfor %}
    ], lambda cell: cell.invalid)) as cell
    from {{ model }}, failing
    where
        {%- for check in checks %}
        (fails_{{ loop.index }} and {{ check.invalid }}){{ ' or' if not loop.last }}
        {%- endfor %}
),
samples as (
    select cell.check, list(distinct cell.value order by cell.value) as sample_values, min(cell.id, 5) as sample_ids
    from invalid_cells
    group by cell.check
),
results as (
    select unnest([
        {%- for check in checks %}
        {'check': {{ loop.index }},
         'column_name': '{{ check.feature_name | string | replace("'", "''") }}',
         'rule': '{{ check.rule }}',
         'expected': '{{ check.expected | string | replace("'", "''") }}',
         'unexpected_count': invalid_{{ loop.index }},
         'element_count': elements_{{ loop.index }},
         'fails': fails_{{ loop.index }}}{{ ',' if not loop.last }}
        {%- endfor %}
    ]) as result
    from failing
)
select
    result.column_name,
    result.rule,
    result.expected,
    result.unexpected_count,
    result.element_count,
    {{ "coalesce(array_to_string(list_slice(samples.sample_values, 1, 5), ', '), '')" if with_values else "''" }} as sample_values,
    array_to_string(samples.sample_ids, ', ') as sample_ids
from results
left join samples on samples.check = result.check
where result.fails
{%- endmacro %}
