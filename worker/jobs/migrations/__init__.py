"""The status table's schema history (Alembic): ``provision db upgrade`` runs it. The versions
import SQLAlchemy and Alembic only, never the models, whose later shape they must not follow;
``env.py`` reads the models' metadata for autogenerate."""
