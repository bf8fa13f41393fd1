from tests.corpus.build import Corpus, corpus_globals_sql, create_corpus, drop_corpus_roles
from tests.corpus.compare import TableChanges, diff, row_changes, snapshot
from tests.corpus.damage import damage
