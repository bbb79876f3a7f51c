"""The MLflow tracking server with authentication, for both stacks.

    python -m services.mlflow [mlflow server args...]

Writes the ini of MLflow's basic-auth app (deny by default: `default_permission =
NO_PERMISSIONS`; the user store at MLFLOW_AUTH_DATABASE_URI; the admin MLFLOW_ADMIN_USERNAME /
MLFLOW_ADMIN_PASSWORD) to a file only this user can read (MLFLOW_AUTH_CONFIG_DIR, else a fresh
0700 temp folder), points MLFLOW_AUTH_CONFIG_PATH at it, and execs
`python -m mlflow server --app-name basic-auth <args>`. MLFLOW_FLASK_SERVER_SECRET_KEY (read by
MLflow itself, the same on every replica) must be set too. A missing or unusable setting exits
with status 2 and a message naming the variable, never its value. A SQLite user store is created
0600 (it holds password hashes). The server gets neither MLFLOW_ADMIN_PASSWORD nor
MLFLOW_AUTH_DATABASE_URI in its environment (it reads them from the ini), nor MLflow's own
MLFLOW_AUTH_ADMIN_USERNAME / _PASSWORD, which would override the ini.

The admin account and its password (checked in mlflow 3.17.2, mlflow/server/auth/__init__.py
`create_admin_user`, and against a real server):

- MLflow creates the admin from the ini only while no user of that name exists in the user
  store (on the first start against an empty store). It ships no default password and refuses
  to start without one, or with the old default `password1234`.
- Afterwards admin_password is ignored: change it and restart, and the old password still logs
  in while the new one gets 401 (MLflow's only exception is rotating away the old default).
  MLflow's way to rotate is the update-password API, which needs a working admin login.
- So this launcher reconciles before the exec: when the admin exists and the configured
  password does not authenticate, it sets the configured one (and restores the admin flag if it
  was removed), logging a warning. The environment is the source of truth: rotating the admin
  password = change MLFLOW_ADMIN_PASSWORD and restart MLflow; a password changed in the UI is
  reset at the next start. Without this, a changed .env (or a regenerated native credentials
  file) would lock the bootstrap out of the accounts it manages. Whoever sets this environment
  can already write the user store, so this grants no one anything new.

The other accounts (trainer, predictor) and their grants are the bootstrap's job, through the
REST API as this admin: services/bootstrap/mlflow_accounts.py.
"""
