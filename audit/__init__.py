"""The audit store: ``persona.outbox`` recorded into a database, each event once.

``schema`` holds the tables and their migrations, ``recorder`` writes a batch of outbox
records and the consumer's positions in one transaction and answers queries, and
``consumer`` is the Kafka side (``personaflow audit``)."""
