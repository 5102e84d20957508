"""rewardlab: a typed client for rewardlab's JSON API (v1).

>>> from rewardlab import Client
>>> rl = Client("http://127.0.0.1:8080", token="rl_...")
>>> rl.import_items("chat-prefs", [{"prompt": "Hi", "responses": [{"text": "Hello"}, {"text": "Hey"}]}])
"""

from .client import ApiError, Client, Export, Run, Task
from .webhooks import WebhookVerificationError, sign, verify

__all__ = ["ApiError", "Client", "Export", "Run", "Task", "WebhookVerificationError", "sign", "verify"]
__version__ = "0.1.0"
