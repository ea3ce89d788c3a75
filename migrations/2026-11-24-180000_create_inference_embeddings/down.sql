DROP TABLE inference_embeddings;
