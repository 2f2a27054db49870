{# The relation is empty (e.g. no dead-lettered change). #}
{% test no_rows(model) %}
select * from {{ model }}
{% endtest %}
