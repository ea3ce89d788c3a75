"""Tessera's embeddings through the official OpenAI client, with an API key.

Run: TESSERA_URL=http://localhost:8000 TESSERA_API_KEY=tsk_… python openai_with_api_key.py
(create the key with `POST /api/v1/auth/api-keys` and the `inference` scope).
"""

import os

from openai import OpenAI

client = OpenAI(base_url=f"{os.environ['TESSERA_URL']}/api/v1/inference", api_key=os.environ["TESSERA_API_KEY"])
response = client.embeddings.create(model="all-MiniLM-L6-v2", input=["A man is eating food.", "A man is riding a horse."])
print(f"{len(response.data)} embeddings of {len(response.data[0].embedding)} dimensions, {response.usage.prompt_tokens} tokens")
