"""How the workflow runs the library: a rule's job set up before JAX (`job`), code
digests from the import graph (`codedigest`), config checks beyond the schema
(`configcheck`), and what a report weighs (`reportsize`)."""
