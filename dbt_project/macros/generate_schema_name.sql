{#- Use the configured schema as-is (dbt's default would prefix it with the target schema), so a use
    case's tables land in the schema named after the use case. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{- custom_schema_name if custom_schema_name is not none else target.schema -}}
{%- endmacro %}
