// AttentionPlugin.cpp - TensorRT glue for mvt_attention() (kernels/attention.cu).
#include "AttentionPlugin.h"

#include "mvt_kernels.h"

#include <cmath>
#include <exception>
#include <stdexcept>

MVT_DEPRECATION_PUSH

namespace mvt
{
namespace plugin
{

namespace
{
// Contract (mobilevit_trt/plugin_spec.py): op_type and version; the namespace is kPLUGIN_NAMESPACE
// (mvtPluginCommon.h). Fields are declared in the creator.
constexpr char const kPLUGIN_NAME[] = "MVT_Attention";
constexpr char const kPLUGIN_VERSION[] = "1";
constexpr char const kWHERE[] = "MVT_Attention plugin";
constexpr PluginInfo kINFO{kPLUGIN_NAME, kPLUGIN_VERSION, kWHERE, (1U << 1) | (1U << 3), "1 or 3 inputs"};
constexpr int32_t kDEFAULT_NUM_HEADS = 1;
constexpr int64_t kMAX_HEAD_DIM = 128; // what the kernels support

bool paramsOk(float scale, int32_t numHeads)
{
    return std::isfinite(scale) && numHeads >= 1;
}
} // namespace

AttentionPlugin::AttentionPlugin(float scale, int32_t numHeads)
    : mScale(scale)
    , mNumHeads(numHeads)
{
}

AttentionPlugin::AttentionPlugin(void const* data, size_t length)
    : mScale(0.f)
    , mNumHeads(0)
{
    char const* p = static_cast<char const*>(data);
    char const* const end = p + length;
    if (!readValue(p, end, mScale) || !readValue(p, end, mNumHeads) || p != end || !paramsOk(mScale, mNumHeads))
    {
        throw std::invalid_argument("malformed serialized MVT_Attention plugin (" + std::to_string(length) + " bytes)");
    }
}

PluginInfo const& AttentionPlugin::info() noexcept
{
    return kINFO;
}

size_t AttentionPlugin::getSerializationSize() const noexcept
{
    return sizeof(mScale) + sizeof(mNumHeads);
}

void AttentionPlugin::serialize(void* buffer) const noexcept
{
    char* p = static_cast<char*>(buffer);
    writeValue(p, mScale);
    writeValue(p, mNumHeads);
}

nvinfer1::DimsExprs AttentionPlugin::getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
    int32_t nbInputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (outputIndex != 0 || inputs == nullptr || (nbInputs != 1 && nbInputs != 3))
        {
            logError(kWHERE, "getOutputDimensions: expects output 0 of 1 (qkv) or 3 (q, k, v) inputs, got "
                    + std::to_string(nbInputs) + " inputs");
            return nvinfer1::DimsExprs{};
        }
        nvinfer1::DimsExprs out = inputs[0];
        if (out.nbDims < 3)
        {
            logError(kWHERE, "getOutputDimensions: inputs need rank >= 3, got rank " + std::to_string(out.nbDims));
            return nvinfer1::DimsExprs{};
        }
        for (int32_t i = 1; i < nbInputs; ++i)
        {
            if (inputs[i].nbDims != out.nbDims)
            {
                logError(kWHERE, "getOutputDimensions: q, k, v must have the same rank");
                return nvinfer1::DimsExprs{};
            }
        }
        nvinfer1::IDimensionExpr const* last = out.d[out.nbDims - 1];
        int64_t const groups = static_cast<int64_t>(mNumHeads) * (nbInputs == 1 ? 3 : 1);
        if (last->isConstant())
        {
            int64_t const c = last->getConstantValue();
            if (c <= 0 || c % groups != 0)
            {
                logError(kWHERE, "getOutputDimensions: last dim " + std::to_string(c) + " is not a multiple of "
                        + std::to_string(groups) + (nbInputs == 1 ? " (3*num_heads)" : " (num_heads)"));
                return nvinfer1::DimsExprs{};
            }
        }
        if (nbInputs == 1)
        {
            // packed [..., N, 3*H*D] -> [..., N, H*D]; symbolic, so a dynamic last dim works too
            out.d[out.nbDims - 1]
                = exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *last, *exprBuilder.constant(3));
        }
        return out;
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("getOutputDimensions: ") + e.what());
    }
    return nvinfer1::DimsExprs{};
}

// Static checks of the input shapes (dims of -1 are dynamic and not compared); empty when fine.
std::string AttentionPlugin::checkInputs(nvinfer1::Dims const* dims, int32_t nbInputs) const
{
    if (nbInputs != 1 && nbInputs != 3)
    {
        return "expects 1 input (packed qkv) or 3 inputs (q, k, v), got " + std::to_string(nbInputs);
    }
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        if (dims[i].nbDims < 3)
        {
            return "inputs need rank >= 3 ([..., N, features]), got " + dimsToString(dims[i]);
        }
        if (dims[i].nbDims != dims[0].nbDims)
        {
            return "q, k, v must have the same rank, got " + dimsToString(dims[0]) + " and " + dimsToString(dims[i]);
        }
        for (int32_t j = 0; j < dims[0].nbDims; ++j)
        {
            int64_t const a = dims[0].d[j];
            int64_t const b = dims[i].d[j];
            if (a >= 0 && b >= 0 && a != b)
            {
                return "q, k, v must have the same shape, got " + dimsToString(dims[0]) + " and "
                    + dimsToString(dims[i]);
            }
        }
    }
    int64_t const last = dims[0].d[dims[0].nbDims - 1];
    int64_t const groups = static_cast<int64_t>(mNumHeads) * (nbInputs == 1 ? 3 : 1);
    if (last >= 0)
    {
        if (last == 0 || last % groups != 0)
        {
            return "last dim " + std::to_string(last) + " of " + dimsToString(dims[0]) + " is not a multiple of "
                + (nbInputs == 1 ? "3*num_heads = " : "num_heads = ") + std::to_string(groups);
        }
        if (last / groups > kMAX_HEAD_DIM)
        {
            return "head dim " + std::to_string(last / groups) + " > " + std::to_string(kMAX_HEAD_DIM)
                + " is not supported";
        }
    }
    return std::string();
}

bool AttentionPlugin::supportsType(int32_t pos, nvinfer1::PluginTensorDesc const* inOut) noexcept
{
    nvinfer1::DataType const type = inOut[pos].type;
    if (pos == 0)
    {
        return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
    }
    return type == inOut[0].type; // all inputs and the output share one type
}

int32_t AttentionPlugin::launch(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
    cudaStream_t stream) const
{
    // TensorRT calls enqueue with the inputs this plugin was built for: 1 or 3 (the dims tell which).
    int32_t const nbInputs = (inputDesc[0].dims.d[inputDesc[0].dims.nbDims - 1]
                                 == static_cast<int64_t>(3) * outputDesc[0].dims.d[outputDesc[0].dims.nbDims - 1])
        ? 1
        : 3;
    nvinfer1::Dims dims[3];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = inputDesc[i].dims;
    }
    std::string const err = checkInputs(dims, nbInputs);
    if (!err.empty())
    {
        logError(kWHERE, "enqueue: " + err);
        return 1;
    }
    nvinfer1::Dims const& x = inputDesc[0].dims;
    int32_t const r = x.nbDims;
    int64_t const features = x.d[r - 1];
    int64_t const hd = nbInputs == 1 ? features / 3 : features; // H*D
    int64_t const headDim = hd / mNumHeads;
    int64_t const seqLen = x.d[r - 2];
    int64_t const batch = volume(x, 0, r - 2);
    nvinfer1::DataType const type = inputDesc[0].type;
    size_t const esize = elementSize(type);
    bool typesOk = esize != 0 && outputDesc[0].type == type;
    for (int32_t i = 1; i < nbInputs; ++i)
    {
        typesOk = typesOk && inputDesc[i].type == type;
    }
    if (!typesOk)
    {
        logError(kWHERE, "enqueue: inputs and output must all be FP32 or all FP16");
        return 1;
    }
    nvinfer1::Dims const& o = outputDesc[0].dims;
    if (o.nbDims != r || o.d[r - 1] != hd || o.d[r - 2] != seqLen || volume(o, 0, r - 2) != batch)
    {
        logError(kWHERE, "enqueue: output " + dimsToString(o) + " does not match input " + dimsToString(x));
        return 1;
    }
    char const* q = static_cast<char const*>(inputs[0]);
    void const* k = nbInputs == 1 ? static_cast<void const*>(q + hd * esize) : inputs[1];
    void const* v = nbInputs == 1 ? static_cast<void const*>(q + 2 * hd * esize) : inputs[2];
    int32_t const dtype = type == nvinfer1::DataType::kFLOAT ? MVT_DTYPE_FLOAT32 : MVT_DTYPE_FLOAT16;
    int32_t const status = mvt_attention(q, k, v, outputs[0], batch, seqLen, mNumHeads,
        static_cast<int32_t>(headDim), features, hd, mScale, dtype, stream);
    if (status != 0)
    {
        logError(kWHERE, std::string("enqueue: mvt_attention failed: ") + mvt_status_string(status));
        return 1;
    }
    return 0;
}

AttentionPlugin* AttentionPlugin::fromFields(char const* where, nvinfer1::PluginFieldCollection const* fc)
{
    std::string err;
    float scale = 0.f;
    nvinfer1::PluginField const* f = findField(fc, "scale");
    if (f == nullptr)
    {
        logError(where, "missing required field 'scale' (FLOAT32)");
        return nullptr;
    }
    if (!readFloat32Field(*f, scale, err))
    {
        logError(where, err);
        return nullptr;
    }
    int32_t numHeads = kDEFAULT_NUM_HEADS;
    f = findField(fc, "num_heads");
    if (f != nullptr && !readInt32Field(*f, numHeads, err))
    {
        logError(where, err);
        return nullptr;
    }
    if (!paramsOk(scale, numHeads))
    {
        logError(where, "needs a finite scale and num_heads >= 1, got scale " + std::to_string(scale)
                + ", num_heads " + std::to_string(numHeads));
        return nullptr;
    }
    return new AttentionPlugin(scale, numHeads);
}

// The contract's fields, exactly (tests/test_plugin_build.py compares them with plugin_spec.py).
AttentionPluginCreator::AttentionPluginCreator()
    : PluginCreatorBase({nvinfer1::PluginField("scale", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1),
        nvinfer1::PluginField("num_heads", nullptr, nvinfer1::PluginFieldType::kINT32, 1)})
{
}

MVT_REGISTER_PLUGIN(AttentionPluginCreator);

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP
