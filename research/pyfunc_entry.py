"""Model code of every registered research version (MLflow "models from code").

MLflow copies this file into each logged model and runs it when the model is
loaded, in place of unpickling a Python object. It must stay a plain import and
one `set_model` call, because old versions keep the copy made when they were
logged.
"""

import mlflow.models

from research.pyfunc_model import ResearchPythonModel

mlflow.models.set_model(ResearchPythonModel())
