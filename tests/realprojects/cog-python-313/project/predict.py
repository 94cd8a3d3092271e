import sys

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, text: str = Input(description="what to greet")) -> str:
        return f"hello {text} from Python {sys.version_info.major}.{sys.version_info.minor}"
