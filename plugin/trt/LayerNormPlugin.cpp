// LayerNormPlugin.cpp - TensorRT glue for mvt_layernorm() (kernels/layernorm.cu).
#include "LayerNormPlugin.h"

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
constexpr char const kPLUGIN_NAME[] = "MVT_LayerNorm";
constexpr char const kPLUGIN_VERSION[] = "1";
constexpr char const kWHERE[] = "MVT_LayerNorm plugin";
constexpr int32_t kNB_INPUTS = 3; // x, gamma, beta
constexpr PluginInfo kINFO{kPLUGIN_NAME, kPLUGIN_VERSION, kWHERE, 1U << kNB_INPUTS, "3 inputs"};

bool epsilonOk(float epsilon)
{
    return std::isfinite(epsilon) && epsilon >= 0.f;
}
} // namespace

LayerNormPlugin::LayerNormPlugin(float epsilon)
    : mEpsilon(epsilon)
{
}

LayerNormPlugin::LayerNormPlugin(void const* data, size_t length)
    : mEpsilon(0.f)
{
    char const* p = static_cast<char const*>(data);
    char const* const end = p + length;
    if (!readValue(p, end, mEpsilon) || p != end || !epsilonOk(mEpsilon))
    {
        throw std::invalid_argument("malformed serialized MVT_LayerNorm plugin (" + std::to_string(length) + " bytes)");
    }
}

PluginInfo const& LayerNormPlugin::info() noexcept
{
    return kINFO;
}

size_t LayerNormPlugin::getSerializationSize() const noexcept
{
    return sizeof(mEpsilon);
}

void LayerNormPlugin::serialize(void* buffer) const noexcept
{
    char* p = static_cast<char*>(buffer);
    writeValue(p, mEpsilon);
}

nvinfer1::DimsExprs LayerNormPlugin::getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
    int32_t nbInputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    (void) exprBuilder;
    try
    {
        if (outputIndex != 0 || inputs == nullptr || nbInputs != kNB_INPUTS)
        {
            logError(kWHERE, "getOutputDimensions: expects output 0 of 3 inputs (x, gamma, beta), got "
                    + std::to_string(nbInputs) + " inputs");
            return nvinfer1::DimsExprs{};
        }
        if (inputs[0].nbDims < 2 || inputs[1].nbDims != 1 || inputs[2].nbDims != 1)
        {
            logError(kWHERE, "getOutputDimensions: x needs rank >= 2 and gamma, beta rank 1");
            return nvinfer1::DimsExprs{};
        }
        return inputs[0];
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("getOutputDimensions: ") + e.what());
    }
    return nvinfer1::DimsExprs{};
}

// Static checks of the input shapes; an empty string when they are fine. Dims of -1 (dynamic) are not compared.
std::string LayerNormPlugin::checkInputs(nvinfer1::Dims const* dims, int32_t nbInputs)
{
    if (nbInputs != kNB_INPUTS)
    {
        return "expects 3 inputs (x, gamma, beta), got " + std::to_string(nbInputs);
    }
    nvinfer1::Dims const& x = dims[0];
    if (x.nbDims < 2)
    {
        return "x must have rank >= 2, got " + dimsToString(x);
    }
    int64_t const c = x.d[x.nbDims - 1];
    for (int32_t i = 1; i < 3; ++i)
    {
        nvinfer1::Dims const& g = dims[i];
        char const* what = i == 1 ? "gamma" : "beta";
        if (g.nbDims != 1)
        {
            return std::string(what) + " must have rank 1, got " + dimsToString(g);
        }
        if (c >= 0 && g.d[0] >= 0 && g.d[0] != c)
        {
            return std::string(what) + " " + dimsToString(g) + " does not match the last dim of x " + dimsToString(x);
        }
    }
    return std::string();
}

bool LayerNormPlugin::supportsType(int32_t pos, nvinfer1::PluginTensorDesc const* inOut) noexcept
{
    nvinfer1::DataType const type = inOut[pos].type;
    switch (pos)
    {
    case 0: return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
    case 1:
    case 2: return type == nvinfer1::DataType::kFLOAT; // gamma, beta: always FP32
    default: return type == inOut[0].type;             // y: like x
    }
}

int32_t LayerNormPlugin::launch(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
    cudaStream_t stream) const
{
    nvinfer1::Dims dims[kNB_INPUTS] = {inputDesc[0].dims, inputDesc[1].dims, inputDesc[2].dims};
    std::string const err = checkInputs(dims, kNB_INPUTS);
    if (!err.empty())
    {
        logError(kWHERE, "enqueue: " + err);
        return 1;
    }
    nvinfer1::Dims const& x = inputDesc[0].dims;
    int64_t const cols = x.d[x.nbDims - 1];
    int64_t const rows = volume(x, 0, x.nbDims - 1);
    if (cols < 1 || rows < 0 || inputDesc[1].dims.d[0] != cols || inputDesc[2].dims.d[0] != cols)
    {
        logError(kWHERE, "enqueue: bad runtime shapes x " + dimsToString(x) + ", gamma "
                + dimsToString(inputDesc[1].dims) + ", beta " + dimsToString(inputDesc[2].dims));
        return 1;
    }
    nvinfer1::DataType const type = inputDesc[0].type;
    if ((type != nvinfer1::DataType::kFLOAT && type != nvinfer1::DataType::kHALF) || outputDesc[0].type != type
        || inputDesc[1].type != nvinfer1::DataType::kFLOAT || inputDesc[2].type != nvinfer1::DataType::kFLOAT)
    {
        logError(kWHERE, "enqueue: x / y must be FP32 or FP16 (same type), gamma / beta FP32");
        return 1;
    }
    int32_t const dtype = type == nvinfer1::DataType::kFLOAT ? MVT_DTYPE_FLOAT32 : MVT_DTYPE_FLOAT16;
    int32_t const status = mvt_layernorm(inputs[0], static_cast<float const*>(inputs[1]),
        static_cast<float const*>(inputs[2]), outputs[0], rows, cols, mEpsilon, dtype, stream);
    if (status != 0)
    {
        logError(kWHERE, std::string("enqueue: mvt_layernorm failed: ") + mvt_status_string(status));
        return 1;
    }
    return 0;
}

LayerNormPlugin* LayerNormPlugin::fromFields(char const* where, nvinfer1::PluginFieldCollection const* fc)
{
    nvinfer1::PluginField const* f = findField(fc, "epsilon");
    if (f == nullptr)
    {
        logError(where, "missing required field 'epsilon' (FLOAT32)");
        return nullptr;
    }
    float epsilon = 0.f;
    std::string err;
    if (!readFloat32Field(*f, epsilon, err))
    {
        logError(where, err);
        return nullptr;
    }
    if (!epsilonOk(epsilon))
    {
        logError(where, "epsilon must be finite and >= 0, got " + std::to_string(epsilon));
        return nullptr;
    }
    return new LayerNormPlugin(epsilon);
}

// The contract's fields, exactly (tests/test_plugin_build.py compares them with plugin_spec.py).
LayerNormPluginCreator::LayerNormPluginCreator()
    : PluginCreatorBase({nvinfer1::PluginField("epsilon", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1)})
{
}

MVT_REGISTER_PLUGIN(LayerNormPluginCreator);

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP
