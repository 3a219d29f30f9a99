"""BERT and DistilBERT encoders: text classification, question answering, NER and embeddings.

The head comes from the checkpoint's architecture (`DistilBertForSequenceClassification`,
`BertForQuestionAnswering`, `BertForTokenClassification`; `BertModel` and the pre-training
heads `...ForMaskedLM` / `BertForPreTraining` serve as the bare encoder, mean-pooled into an
embedding). Other heads (multiple choice, next sentence prediction, causal LM) are refused.
"""

from NNDF.export.first_token import LastLayer, first_token_attention
from NNDF.kinds.encoder_only.family import EncoderFamily
from NNDF.kinds.encoder_only.graphs import EncoderLayout, max_text_positions
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.family import Variant, hub_variants

from BERT.tiny import build_embeddings, build_ner, build_qa, build_sentiment, wordpiece_tokenizer

HEADS = {"ForSequenceClassification": Task.SEQUENCE_CLASSIFICATION, "ForQuestionAnswering": Task.QUESTION_ANSWERING,
         "ForTokenClassification": Task.TOKEN_CLASSIFICATION, "Model": Task.EMBEDDINGS,
         "ForMaskedLM": Task.EMBEDDINGS, "ForPreTraining": Task.EMBEDDINGS}


def _bert_first_token(layer, hidden, mask):
    """BertLayer (post-norm) for the first token: BertSelfOutput adds the residual and normalises,
    BertOutput likewise after the feed-forward."""
    attn = layer.attention.self
    context = first_token_attention(attn.query, attn.key, attn.value, attn.num_attention_heads, hidden, mask)
    attended = layer.attention.output(context, hidden[:, :1])
    return layer.output(layer.intermediate(attended), attended)


def _distilbert_first_token(layer, hidden, mask):
    """DistilBERT's TransformerBlock (post-norm) for the first token."""
    attn = layer.attention
    context = first_token_attention(attn.q_lin, attn.k_lin, attn.v_lin, attn.n_heads, hidden, mask)
    attended = layer.sa_layer_norm(attn.out_lin(context) + hidden[:, :1])
    return layer.output_layer_norm(layer.ffn(attended) + attended)


# BERT takes token type ids (QA's question / context segments); DistilBERT has none. Both are fused
# with ONNX Runtime's "bert" fusions (EmbedLayerNormalization, Attention, SkipLayerNormalization,
# BiasGelu) before onnxrt's int8 quantization (see NNDF/encoder_only.onnxrt_backend).
BERT_LAYOUT = EncoderLayout("Bert", HEADS, uses_token_types=True, ort_fusions="bert",
                            last_layer=LastLayer("encoder.layer", _bert_first_token))
DISTILBERT_LAYOUT = EncoderLayout("DistilBert", {k: v for k, v in HEADS.items() if k != "ForPreTraining"},
                                  ort_fusions="bert", last_layer=LastLayer("transformer.layer", _distilbert_first_token))

HUB_VARIANTS = ("bert-base-uncased", "bert-large-uncased", "distilbert-base-uncased",
                "distilbert-base-uncased-finetuned-sst-2-english",
                "bert-large-uncased-whole-word-masking-finetuned-squad", "dslim/bert-base-NER",
                "sentence-transformers/all-MiniLM-L6-v2")

BERT_FAMILY = EncoderFamily(
    name="BERT",
    package="BERT",
    variants=(
        Variant("distilbert-tiny-sst2", arch="distilbert", build_tiny=build_sentiment),   # first: the default
        Variant("bert-tiny-squad", arch="bert", build_tiny=build_qa),
        Variant("bert-tiny-ner", arch="bert", build_tiny=build_ner),
        Variant("minilm-tiny-embeddings", arch="bert", build_tiny=build_embeddings),
        *hub_variants(HUB_VARIANTS),
    ),
    fallback_tokenizer=wordpiece_tokenizer,
    max_positions=max_text_positions,
    layouts={"default": BERT_LAYOUT, "bert": BERT_LAYOUT, "distilbert": DISTILBERT_LAYOUT},
    model_types=("bert", "distilbert"),
    samples={Task.SEQUENCE_CLASSIFICATION: "data/sentiment_test.jsonl", Task.QUESTION_ANSWERING: "data/qa_test.jsonl",
             Task.TOKEN_CLASSIFICATION: "data/ner_test.jsonl", Task.EMBEDDINGS: "data/sentiment_test.jsonl"},
    calibration_data={Task.SEQUENCE_CLASSIFICATION: "data/sentiment_train.jsonl",
                      Task.QUESTION_ANSWERING: "data/qa_train.jsonl", Task.TOKEN_CLASSIFICATION: "data/ner_train.jsonl",
                      Task.EMBEDDINGS: "data/sentiment_train.jsonl"},
)
